import sys

from icm.launch import main

sys.exit(main())
