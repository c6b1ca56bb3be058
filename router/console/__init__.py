"""The web console of `router serve`: /ui/ on the --http port, and the guard of /ui/ and /api/.

Owns: :mod:`.guard` (when the console is on, ``ui.auth``, CSRF, the security headers of every
/ui/ and /api/ answer), :mod:`.routes` (serves the single page and its static files from
``static/``: plain JavaScript modules and one stylesheet, no build step, nothing from a CDN).
The data comes from the JSON API under /api/ (router/activity/); the console never reads a
store itself. Imports only config, core and support; app/server.py mounts it.
"""
