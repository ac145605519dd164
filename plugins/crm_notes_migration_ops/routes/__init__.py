"""The Ops API's routers, one per concern: monitor (reads), operate (state changes), rollouts, ui, docs.

app.py includes them; every route raises its refusals, which errors.py answers."""
