"""mmdpo/data"""
