"""``mailgem ui``: a local web app for a fabric's connections and a job's Email gem (the browser
dialogs). It sits above the runner and calls the runner's, gems', fabric's and connections' APIs;
nothing below imports it. Needs the ``ui`` extra (Starlette, uvicorn, ruamel.yaml)."""
