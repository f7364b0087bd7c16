"""Scale-out: Levant engine replicas run by a cluster manager, behind one URL.

``replica.py`` is what one replica is (a whole Levant app with its own engine,
internal: auth off, its own throwaway database); ``ray_serve.py`` runs replicas as a
Ray Serve deployment (it imports Ray; install the ``ray`` extra). The gateway reaches
them as a ``backend = "ray"`` deployment in its routing file.
"""
