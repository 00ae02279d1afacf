"""``wsdeploy``: production configs rendered from ``deploy_templates/``.

- ``context``: the values (command options, then settings, then defaults) and their checks.
- ``templates``: the template engine (a project's own templates dirs first).
- ``nginx``: version detection and ``nginx -t`` in a throwaway prefix.
- ``apache``: ``apachectl -t`` in a throwaway ServerRoot that loads the modules itself.
- ``caddy``: ``caddy adapt`` and ``caddy validate`` with Caddy's storage kept aside.
- ``trial``: what the three ``--check`` share (a trial copy of the context).
- ``certs``: throwaway CA and leaf certificates (checks and tests).
- ``output``: atomic writes, no overwrite without ``--force``, diffs.
"""
