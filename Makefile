# The two commands of the README:
#   make run    set up .venv and run the whole stack in simulation on the shipped model
#   make test   set up .venv and run the test suite
# Both are idempotent: the environment is rebuilt only when requirements or setup.py change.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lewm-installed
PYTEST_ARGS ?=

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export ROS_LOCALHOST_ONLY ?= 1
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup run test lint clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt setup.py setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

run: setup
	$(VENV)/bin/lewm demo

# pytest exits 5 when it collects no test; that is a failure here, not a pass.
test: setup
	@status=0; $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo 'pytest collected no tests' >&2; exit 1; fi; \
	exit $$status

lint: setup
	$(PY) -m flake8 lewm_ros test launch setup.py

clean:
	rm -rf $(VENV) build install log *.egg-info
