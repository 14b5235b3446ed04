"""Reports: console tables, CSV files, progress bars and plots."""
