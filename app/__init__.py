"""The interactive open-vocabulary app (``make app``, ``python -m app``; docs/app.md).

It lives beside the library, like ``demo/``: the library's :mod:`densevlm_d2.predictor` and
:mod:`densevlm_d2.visualization` do the work, this package finds the models on this machine
(:mod:`app.catalogue`), turns the page's values into calls (:mod:`app.handlers`) and lays out the
page with Gradio (:mod:`app.ui`, the optional extra ``densevlm_d2[app]``)."""
