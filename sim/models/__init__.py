"""Python reference models of gateware blocks (pure Python, no Amaranth)."""
