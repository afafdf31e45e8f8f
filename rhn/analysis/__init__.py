"""Analyses of trained highway nets: gate statistics, lesioning, and their figures."""
