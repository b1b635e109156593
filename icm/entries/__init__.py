"""Ways a routing request reaches the router: the AMI UserEvent (the shipped dialplan)."""
