"""A simulated Asterisk for ICM's tests, benchmarks and ``icm demo``.

- :mod:`simpbx.ami_server`: the AMI port, byte for byte (login, classes, event filters,
  faults);
- :mod:`simpbx.dialplan`: an interpreter that runs ICM's shipped ``extensions_icm.conf``
  unchanged, modelled on Asterisk's C sources;
- :mod:`simpbx.pbx`: the PBX around them (channels, devices, hints, phones, calls);
- :mod:`simpbx.redis_server`: a private redis-server on a free port.

It is not part of ICM's product: ICM's ``test`` and ``demo`` extras install it.
"""
