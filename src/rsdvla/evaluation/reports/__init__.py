"""Reading episode records: summaries, paired statistics, compare, merge, sweep tables and the
plots and reports written from them."""
