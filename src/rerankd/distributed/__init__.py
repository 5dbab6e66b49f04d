"""rerankd past one machine, on Ray (the ``rerankd[ray]`` extra).

- :mod:`rerankd.distributed.batch`: ``rerankd batch --ray``: a batch job's shards through Ray Data
  (``map_batches`` over an actor pool, one model per actor).
- :mod:`rerankd.distributed.serve`: ``rerankd serve --ray`` and the ``serve run`` builder: the server's own
  FastAPI app as a Ray Serve ingress deployment, autoscaled on ongoing requests.

Nothing outside this package imports Ray; importing a module here without Ray installed raises
:class:`~rerankd.errors.MissingDependency` naming the extra.
"""
