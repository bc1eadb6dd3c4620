"""The recipes: one module per recipe, the public building blocks they share (steps), and the registry."""
