"""What a published night is: its manifest, the checkpoint of a run in progress, and the
count-vs-rows warning written beside it.
"""
