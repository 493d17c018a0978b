"""Browser checks of varseld's status page (see browser.py)."""
