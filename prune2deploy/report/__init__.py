"""The report: its sections as terminal lines and Markdown, plots, gates, JUnit."""
