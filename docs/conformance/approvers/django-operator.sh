#!/usr/bin/env bash
# Approver for agentauth-conformance against a django-agentauth project: the operator path.
#   agentauth-conformance URL --approver 'docs/conformance/approvers/django-operator.sh {agent_id}'
# Environment: AGENTAUTH_APPROVE_USER (default "demo", the user seed_demo creates),
# MANAGE_PY (default ./manage.py), PYTHON (default python), and whatever settings the server
# itself runs with (DJANGO_SETTINGS_MODULE, database URL...), so both see the same database.
set -euo pipefail
agent_id=${1:?usage: django-operator.sh AGENT_ID}
exec "${PYTHON:-python}" "${MANAGE_PY:-./manage.py}" agentauth_approve "$agent_id" \
    --user "${AGENTAUTH_APPROVE_USER:-demo}"
