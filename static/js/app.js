// Small progressive enhancements shared by every page. Page-specific code lives in its own file.
