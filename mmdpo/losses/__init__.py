"""mmdpo/losses"""
