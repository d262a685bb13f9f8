"""What a run tells people (log lines, the summary, metrics) and what reads OUT back for them
(the HTML report).
"""
