"""One training stage, two backends: a plain tensor loop for heads on cached features, Lightning for the rest."""
