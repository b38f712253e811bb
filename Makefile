# vmgenc-tools.  GNU make and BSD make both read this file.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PREFIX ?= /usr/local
DESTDIR ?=
MANDIR ?= $(PREFIX)/share/man
# install: --ignore-installed keeps pip from uninstalling a copy PYTHON already has when
# staging into DESTDIR; PIP_INSTALL_FLAGS=--no-build-isolation builds offline.
PIP_INSTALL_FLAGS ?=

.PHONY: test lint demo bench install clean deps

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

deps:
	@sh tools/ensure-deps

lint: $(VENV)/.installed
	@$(VENV)/bin/ruff check -q vmgenc_tools tests bench

test: $(VENV)/.installed deps lint
	@$(VENV)/bin/pytest -q

demo: $(VENV)/.installed deps
	@sh tools/demo

bench: $(VENV)/.installed deps
	@$(PY) bench/run_all.py

install:
	$(PYTHON) -m pip install --no-deps --ignore-installed $(PIP_INSTALL_FLAGS) \
		--root "$(DESTDIR)/" --prefix "$(PREFIX)" .
	install -d "$(DESTDIR)$(PREFIX)/etc/devd" "$(DESTDIR)$(PREFIX)/etc/rc.d" \
		"$(DESTDIR)$(PREFIX)/etc/vmgenc/hooks.d" "$(DESTDIR)$(MANDIR)/man8" "$(DESTDIR)$(MANDIR)/man5"
	sed 's|/usr/local|$(PREFIX)|g' devd/vmgenc.conf > "$(DESTDIR)$(PREFIX)/etc/devd/vmgenc.conf"
	chmod 444 "$(DESTDIR)$(PREFIX)/etc/devd/vmgenc.conf"  # as base /etc/devd/*.conf and the port
	sed 's|/usr/local|$(PREFIX)|g' rc.d/vmgenc > "$(DESTDIR)$(PREFIX)/etc/rc.d/vmgenc"
	chmod 555 "$(DESTDIR)$(PREFIX)/etc/rc.d/vmgenc"
	install -m 444 man/vmgenctl.8 "$(DESTDIR)$(MANDIR)/man8/vmgenctl.8"
	install -m 444 man/vmgenc-hooks.5 "$(DESTDIR)$(MANDIR)/man5/vmgenc-hooks.5"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
