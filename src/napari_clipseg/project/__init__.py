"""The annotation loop: a folder of images turned into a verified training set.

``open_project`` (:mod:`.open`) makes or reopens a :class:`~.project.Project`; the folder layout
and the lock are in :mod:`.folder`, the review queue's score in :mod:`.score`, the training-set
export in :mod:`.export`. See docs/annotation-loop.md.
"""
