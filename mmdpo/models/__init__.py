"""mmdpo/models"""
