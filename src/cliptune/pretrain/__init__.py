"""Contrastive pre-training of projection heads on frozen towers (how `lite`'s shipped heads are made)."""
