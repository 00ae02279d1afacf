"""``wssecure check``: audit rules, registered with Django's system-check framework."""
