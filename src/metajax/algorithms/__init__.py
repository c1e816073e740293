"""Meta-learning algorithms, each a factory returning a MetaLearner."""
