"""Paper reproductions: each module trains what its paper compares and writes a report."""
