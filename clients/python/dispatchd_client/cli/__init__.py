"""``dispatchctl``, the admin command line of dispatchd (installed with the client).

::

    dispatchctl queues
    dispatchctl queue set thumbnails --width 8 --rate 50 --burst 100
    dispatchctl jobs thumbnails --state pending
    dispatchctl watch

``dispatchctl --help`` lists every command; ``dispatchctl COMMAND --help`` its options.
"""

from dispatchd_client.cli.app import main

__all__ = ["main"]
