"""The catalogue (model cards), the content-addressed weights store and weight sources."""
