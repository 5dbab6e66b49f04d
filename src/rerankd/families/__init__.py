"""Model families: text -> token ids -> scores. One file per family; see ``rerankd.registry``."""
