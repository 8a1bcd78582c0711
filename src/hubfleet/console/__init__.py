"""The fleet console: the web app at the front door where operators and hub admins see hubs' health, usage and cost.

People log in with one of the fleet's hubs (the console is an OAuth client of every hub); operators see every hub,
a hub's admins see their own hub. Served by the front door's tornado app inside the supervisor (`app.Console`).
"""
