"""The one error type of the label-map modules."""


class LabelMapError(ValueError):
    """Bad or inconsistent label maps; the message names the file or value."""
