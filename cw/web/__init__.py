"""The district web page (``cw web``): what needs a person, live, and the actions it takes.

What belongs here: reading the store into what the page shows (:mod:`board`), the dependency
graph as SVG (:mod:`graph`), an agent's transcript as it grows (:mod:`transcripts`), the
Tornado application and its handlers (:mod:`app`), the server-sent events that keep an open
page current (:mod:`live`), and the templates. Every action goes through
:class:`cw.district.District`; every read through the store's rows and views.
"""
