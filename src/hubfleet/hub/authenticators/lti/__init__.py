"""LTI 1.3 launches on a hub, next to its normal login (`hub.lti` in the fleet file).

`with_lti(base)` makes the hub's authenticator class (shared password, native, GitHub …) into one that also takes
LTI launches: JupyterHub 6 runs one authenticator per hub, and an authenticator may add request handlers
(`get_handlers`). The LTI handlers validate a launch (`hubfleet.edu.lti.launch`) and then log the person in through
JupyterHub's own `login_user` with the validated launch as the login data; `authenticate` recognises that data
and passes everything else (the login form, OAuth callbacks) to the base class. So one hub keeps its password or
GitHub login and gains LTI, with JupyterHub's allow/block lists, admin flags and login cookies unchanged.

Endpoints (under the hub's prefix, e.g. `/hubs/<hub>/hub/`):

- `lti13/login` (GET, POST): OIDC third-party login initiation from the LMS → redirect to the platform's
  authorization endpoint, with `state` and `nonce` kept server-side.
- `lti13/launch` (POST): the id_token → the person, their course and role → their server, in the course folder.
  After an instructor's launch of a course whose roster comes from the LMS, the roster is synced in the background
  (`hubfleet.edu.roster.sync_course` over NRPS, with the tool's key).
- `lti13/jwks`: the tool's public key set; `lti13/config`: every value an LMS admin needs (JSON);
  `lti13/canvas.json`: the Canvas developer key configuration (paste its URL into Canvas).
"""

from hubfleet.hub.authenticators.lti._authenticator import (
    TEMPLATES,
    LTI13Authenticator,
    course_slug,
    with_lti,
)
from hubfleet.hub.authenticators.lti._handlers import STATE_COOKIE_PREFIX, LaunchLogin, state_cookie_options
from hubfleet.hub.authenticators.lti._toolconfig import PREFIX, ToolURLs, canvas_developer_key, tool_configuration

__all__ = [
    "PREFIX",
    "STATE_COOKIE_PREFIX",
    "TEMPLATES",
    "LTI13Authenticator",
    "LaunchLogin",
    "ToolURLs",
    "canvas_developer_key",
    "course_slug",
    "state_cookie_options",
    "tool_configuration",
    "with_lti",
]
