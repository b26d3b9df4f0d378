"""One image's pixels: decode untrusted bytes, predict the matte, finish its edges, encode the cut-out."""
