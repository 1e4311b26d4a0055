"""Notebook 06: rtlib against Socket.IO (Node and Python) and two plain forwarders, same driver, same runs
(``compare``, tables in ``compare_report``), and the browser client's size against socket.io-client's."""
