"""Looking at neurons: circuitsvis views and matplotlib figures."""
