"""Leaseflow: conflict-free DHCP leases whose lifecycle is a BPMN process."""
