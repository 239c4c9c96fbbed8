"""Preprocessing raw photos and videos into an aligned face store: detect, landmarks, align, parse, write."""
