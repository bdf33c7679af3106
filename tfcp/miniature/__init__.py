"""Paper in miniature: the grids of Fig. 1 and Tables 10-11 on generated data."""
