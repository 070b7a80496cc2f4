"""`underlayctl`: one command line for a running controller, over its read-only operator REST API
(controller/API.md, "Operators"). Verbs live in ctl/verbs/, one module each (ctl/verbs/__init__.py)."""
