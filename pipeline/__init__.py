"""Filter-Map-Insights: filters, feature maps and guided backpropagation of torchvision CNNs.

Packages read top-down: ``config`` and ``plan`` (what to do), ``models`` (weights and layers),
``methods`` (pure tensor code), ``render`` (tiles to pictures), ``output`` (files and manifest),
``report`` (browsable index), with ``engine`` tying them together.
"""
