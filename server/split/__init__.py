"""Split points with autoencoder bottlenecks (MAHPPO's split inference, and a stronger bottleneck).

Modules, in the order `coinfer split` uses them:

* ``backbones``: which backbones can be cut and how they get their weights;
* ``sizing``: how big each latent is (compression target in real codec bytes, or element reduction);
* ``train``: bottleneck training with the backbone frozen, codec-faithful evaluation, joint fine-tuning;
* ``pipeline``: the whole `coinfer split` run; ``bundle``: the parts it writes; ``report``: report.json;
* ``cli``: the command. The benchmark, its targets and its rate-accuracy plots are in ``coinfer.bench``
  (``split``, ``split_targets``, ``split_plots``).

The bottleneck modules themselves live in ``coinfer.core.models.autoencoders`` and the code that
runs a split bundle (device half, wire bytes, server half) in ``coinfer.core.split_point``.
"""
