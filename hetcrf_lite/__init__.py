"""hetcrf_lite: a notebook-first teaching package for HetCRF (arXiv 2506.06682).

Self-supervised learning on heterogeneous graphs: a shared HAN encoder feeding a generative
channel (masked feature and meta-path edge reconstruction) and a contrastive channel (schema and
fusion views from encoder embeddings, a second-stage GCN, InfoNCE), with positive-sample
augmentation (meta-path connectivity, K-means key deviated nodes).
"""
__version__ = "0.2.0"
