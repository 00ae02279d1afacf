"""``wssecure check``: audit rules, also registered with Django's system-check framework.

- ``rules``: settings and ASGI-chain rules (``manage.py check`` / ``check --deploy``).
- ``asgi``: walks the real ASGI application into a per-route table.
- ``frontend``: the front-end rules (ids E101-E103, W101-W106) the next three report.
- ``nginx``: rules for a deployed nginx config (``--nginx-conf``).
- ``apache``: rules for a deployed Apache config (``--apache-conf``).
- ``caddy``: rules for a deployed Caddyfile or Caddy JSON config (``--caddyfile``).
- ``certs``: rules for a certificate chain and key (``--cert``, ``--key``).
- ``live``: one-line facts about the configured Redis servers (``--live``).
- ``advisories``: installed versions of the WebSocket stack with published advisories.
- ``probe`` (``wssecure probe``): black-box probes of a running endpoint, over
  ``probing``'s bounded client.
"""

from django.core.checks import Tags, register

from . import rules


@register(Tags.security)
def wsops_checks(app_configs, **kwargs):
    return rules.run(rules.SETTINGS_RULES)


@register(Tags.security, deploy=True)
def wsops_deploy_checks(app_configs, **kwargs):
    return rules.run(rules.ASGI_RULES + rules.PACKAGE_RULES + rules.DEPLOY_RULES)
