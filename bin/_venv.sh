# Shared by bin/run and bin/test: create .venv and install a requirements file when it changed.
ensure_venv() {
  local reqs="$1" python="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "Creating virtualenv in .venv"
    "$python" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
  fi
  local stamp=".venv/.installed-$(basename "$reqs")"
  local digest
  digest="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "Installing $reqs"
    .venv/bin/pip install -q -r "$reqs"
    echo "$digest" > "$stamp"
  fi
}
