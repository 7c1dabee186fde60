"""twistd plugin pointers; the services live in the fileshare package."""

from twisted.application.service import ServiceMaker

fileshare_tracker = ServiceMaker(
    "fileshare tracker", "fileshare.tracker.service", "fileshare tracker: accounts and file index", "fileshare-tracker"
)
fileshare_peer = ServiceMaker(
    "fileshare peer", "fileshare.peer.service", "fileshare peer: share and fetch files", "fileshare-peer"
)
