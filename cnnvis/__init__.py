"""Machinery behind helpers.py that a learner need not read: Colab and Drive, Kaggle downloads,
safe folder building and checkpoint bookkeeping. One concern per module; helpers.py imports them."""
