"""The Images API as a client sees it: the HTTP client (the only aiohttp import), credentials,
retries, pacing, List V2 paging and filters, and the rule for showing a URL.
"""
