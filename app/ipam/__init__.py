"""IP address management: subnets, pools and the choice of addresses (pure domain)."""
