"""Host partners: adapters that give files, sockets and captures the partner interface."""
